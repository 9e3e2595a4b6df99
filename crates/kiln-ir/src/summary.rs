//! Model summary: per node output shape, params, FLOPs, receptive field and jump; totals.
