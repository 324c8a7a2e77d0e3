"""The NQM fitted to a network (``suite nqm fit``): curvature by Lanczos on Hessian-vector
products (:mod:`.spectrum`), gradient noise in that eigenbasis from per-example gradients
(:mod:`.noise`), the matching NQM and its predicted steps to a target against the batch size
(:mod:`.predict`), and the whole fit at a checkpoint trained by the suite's engine (:mod:`.fit`)."""
