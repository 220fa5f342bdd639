//! Expiry of the store's certificates.
