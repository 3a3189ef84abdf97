"""The documentation, checked: the README stays a quick start, every relative link in it and
in docs/ reaches a file (and a heading, when it names one), and every YAML block of the
configuration reference is a config the sidecar accepts."""
