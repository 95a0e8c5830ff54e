"""The ``mssante`` command line: one module per verb group, assembled in :mod:`mssante.cli.main`."""
