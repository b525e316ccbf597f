"""Coverage-guided fuzzing (atheris) of the parser, the stream framer and the proxy core (README.md here)."""
