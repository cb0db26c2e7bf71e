"""Import target for the loader tests: a module that raises while being imported."""

raise RuntimeError("boom while importing sample_broken_import")
