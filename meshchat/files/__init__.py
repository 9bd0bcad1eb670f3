"""File transfers (issue 14)."""
