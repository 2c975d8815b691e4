"""Gradient views: saliency, guided backprop, DeconvNet, Grad-CAM, integrated gradients, occlusion."""
