"""Reports: grid summary tables (``tables``), and the experiment report (``suite report``):
MLflow runs read back (``reader``), paired statistics (``stats``), the NQM scaling sweep
(``scaling``), the lecture's claims (``claims``), figures (``figures``) and the HTML/Markdown
document (``document``, ``build``).

May import: :mod:`suite.tracking`'s records and direct store (to read runs without MLflow), MLflow
where that store does not serve, :mod:`suite.theory` and :mod:`suite.critical` (the closed forms
shown beside what was measured), :mod:`suite.tuning.edges`, :mod:`suite.specs` and the core
modules. Not the engine: a report reads what runs measured, it trains nothing.
"""
