"""One module per trigger: parse the input, call the reconcile core, report."""
