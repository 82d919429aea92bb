//! End-to-end tests: the real binary against real PostgreSQL (provider and,
//! for half of the tests, store). One test binary for fast linking.

mod kit;

mod audit;
mod authz;
mod cli_docs;
mod crash;
mod doctor;
mod failover;
mod gateway;
mod gateway_ssh;
mod gcp;
mod input;
mod kubernetes;
mod lifecycle;
mod locks;
mod monitoring;
mod mysql;
mod notify_email;
mod notify_webhook;
mod oidc;
mod outage;
mod package;
mod providers;
mod proxy;
mod proxy_kit;
mod proxy_ops;
mod receiver;
mod routing;
mod scoping;
mod setup;
mod shutdown;
mod slack;
mod ssh;
mod transparency;
mod web;
mod web_http;
mod web_oidc;
mod webdriver;
