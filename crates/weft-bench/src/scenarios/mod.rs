//! One module per scenario; each returns its table(s) and fails only when the measurement
//! itself broke (a goal missed is printed, never an error).

pub mod bulk;
pub mod cni;
pub mod convergence;
pub mod dataplane;
pub mod etcd_load;
pub mod footprint;
pub mod startup;
