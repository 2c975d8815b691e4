"""Two models side by side on one input."""
