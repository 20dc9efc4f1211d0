"""Every security decision of the daemon, one module each.

- `scrub`: what counts as a secret, and how it is cut out of text that leaves the daemon.
"""
