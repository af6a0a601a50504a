//! End-to-end tests of Doppel live in `tests/`: real namespaces, real apps under Xvfb, run as an
//! unprivileged user that the tests create. This library part is empty on purpose.
