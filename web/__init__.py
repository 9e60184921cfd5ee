"""The browser UI's templates and static files (installed as the package `tracker.web`)."""
