//! coapgate-endpoint (skeleton).
