"""Reports: grid summary tables (``tables``), and the experiment report (``suite report``):
MLflow runs read back (``reader``), paired statistics (``stats``), the NQM scaling sweep
(``scaling``), the lecture's claims (``claims``), figures (``figures``) and the HTML/Markdown
document (``document``, ``build``)."""
