"""Example OpenAI-client calls against the serve endpoint (see README.md beside this file)."""
