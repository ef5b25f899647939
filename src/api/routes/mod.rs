//! HTTP handlers, one file per endpoint group.

pub mod auth;
pub mod health;
pub mod tenants;
