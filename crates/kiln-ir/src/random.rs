//! Random valid graphs decoded from bytes: one generator shared by proptest and the fuzz targets.
