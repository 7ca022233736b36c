//! coapgate-server (skeleton).
