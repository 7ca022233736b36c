//! coapgate-codec (skeleton).
