//! HTTP handlers, one file per endpoint group.

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod forward;
pub mod health;
mod health_rules;
pub mod maintenance;
pub mod metrics;
pub mod reload;
pub mod status;
pub mod tenants;
