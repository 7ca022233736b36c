//! coapgate-store (skeleton).
