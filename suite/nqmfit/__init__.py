"""The NQM fitted to a network (``suite nqm fit``): curvature by Lanczos on Hessian-vector
products and Lanczos quadrature over the rest of the spectrum (:mod:`.spectrum`), gradient noise
in the top eigenbasis from per-example gradients (:mod:`.noise`), the matching NQM and its
predicted steps to a target against the batch size (:mod:`.predict`), the whole fit at a
checkpoint trained by the suite's engine (:mod:`.fit`), and the measured steps between two loss
levels (:mod:`.measure`) set beside the prediction (:mod:`.compare`, ``suite nqm compare``)."""
