"""What the tests and the benchmark share, shipped with the package (as gokart.testing)."""
