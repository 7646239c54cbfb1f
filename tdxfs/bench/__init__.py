"""``tdxfs bench``: the ioctl and the file designs measured side by side on one model."""
