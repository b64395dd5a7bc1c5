"""The kopf controller: handlers of both kinds, admission, the reconcile loop, start-up catch-up."""
