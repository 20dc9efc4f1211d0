"""Every security decision of the daemon, one module each.

- `listeners`: the private Unix listeners (control socket, gateway.sock): made 0600 under a
  tight umask, removed on close only while they are still ours.
- `peer`: who may talk to the daemon over a Unix socket, and the check both front doors call.
- `scrub`: what counts as a secret, and how it is cut out of text that leaves the daemon.
- `files`: what a file or directory of ours may be open to, and what is done when it is more.
"""
