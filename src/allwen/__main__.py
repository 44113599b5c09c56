"""``python -m allwen ...`` is ``allwen ...`` (for environments without the console script on PATH)."""

from allwen.cli import app

if __name__ == "__main__":
    app(prog_name="allwen")
