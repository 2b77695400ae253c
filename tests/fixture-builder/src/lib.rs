//! Builds real-shaped host trees (sysfs symlinks included) from compact host descriptions.
