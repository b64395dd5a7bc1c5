"""`python -m kubepay_sandbox`: the same as the `kubepay-sandbox` console script."""

from kubepay_sandbox.cli import main

main()
