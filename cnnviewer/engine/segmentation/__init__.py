"""Beyond classification (issue 25): classifiers run fully convolutionally, and segmentation."""
