"""Build-only scripts (generated docs sections); not part of the installed package."""
