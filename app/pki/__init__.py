"""PKI: certificate profiles, the built-in CA, timestamps and PAdES signatures."""
