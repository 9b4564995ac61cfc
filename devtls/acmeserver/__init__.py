"""``devtls acme-server``: an RFC 8555 ACME server that issues from the local CA.

The protocol (problems, allowlist, nonces, jwsverify, state, challenges, service) is sans-IO;
validate.py and server.py are the network side.
"""
