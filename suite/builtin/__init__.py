"""The lecture's components. Each module is a plugin registered through the ``suite.plugins``
entry-point group of this project's own setup.cfg, exactly as a third-party plugin would be."""
