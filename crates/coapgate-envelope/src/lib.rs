//! coapgate-envelope (skeleton).
