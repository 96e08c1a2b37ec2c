"""`python -m tunesmith.cli ...`: the same commands as `tunesmith ...`."""

from tunesmith.cli import main

if __name__ == "__main__":
    main()
