"""`python -m tunesmith.cli ...`: the same commands as `tunesmith ...`."""

from tunesmith.cli import main

main()
