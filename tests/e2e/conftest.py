"""adopt_project/ is another project's tree (its tests import its own root module); it is run
inside that project by tests/e2e/test_adopt.py, never collected by tfship's own suite."""

collect_ignore = ["adopt_project"]
