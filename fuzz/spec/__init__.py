"""Parse and validate cluster specs and Fuzzfiles, with errors that name file:line:col and field."""
