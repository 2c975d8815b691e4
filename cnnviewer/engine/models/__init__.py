"""Getting a model: the loaded-model handle, the catalogue, pretrained and user weights, architecture files."""
