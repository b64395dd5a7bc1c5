"""`python -m kubepay`: the same as the `kubepay` console script."""

from kubepay.cli import main

main()
