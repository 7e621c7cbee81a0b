"""One-off studies behind the release's choices: each a command that measures one question
on validation or out-of-fold series and writes its results file (never the test sets)."""
