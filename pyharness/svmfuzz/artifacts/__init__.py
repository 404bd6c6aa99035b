"""External build steps: QEMU, guest kernel, guest driver, hmm-tests, initramfs.

Each step hashes its inputs, reuses a cached artifact when one exists under
that hash, and otherwise builds it and publishes it atomically.
"""
