"""Object and face detection: detectors, MTCNN, the live pipeline, explanations of one detection."""
