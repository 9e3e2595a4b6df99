//! The model zoo, written with the builder API: the source of the `.kiln` files in examples/models.
