//! Integration tests: the real `tokend` binary against the provider emulators on 127.0.0.1,
//! asserting what an operator sees — files, modes, exit codes and logs.

mod support;

mod availability;
mod clock;
mod commands;
mod config_errors;
mod daemon;
mod demo;
mod egress;
mod etcd_client;
mod faults;
mod ha_election;
mod ha_etcd;
mod ha_faults;
mod ha_kube;
mod ha_kube_faults;
mod ha_scenarios;
mod ha_store;
mod hardening;
mod hooks;
mod http;
mod http_json;
mod interop;
mod kube_client;
mod kube_output;
mod kube_store;
mod lease_election;
mod notify;
mod outputs;
mod providers;
mod reality;
mod secrets;
mod smoke;
mod state;
mod supervisor;
