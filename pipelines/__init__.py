"""Ray drivers: each is `python -m pipelines.<name>`. All Ray code of the project lives here."""
