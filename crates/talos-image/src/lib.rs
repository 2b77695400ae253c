//! Talos Linux support: Image Factory schematics and machine-config generation.
