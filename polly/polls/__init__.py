"""Poll definitions and operations that work on the database only (the `polly poll` commands)."""
