"""What the computation depends on: knock-outs, channel importance, residual-block lesions and the
equivariance / invariance probe (issue 24). Qt-free; run on the job thread or from the CLI."""
