pub mod wkt;
pub mod proto {
    pub mod google {
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
            include!(concat!(env!("OUT_DIR"), "/google.rpc.serde.rs"));
        }
        pub mod api {
            include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
        }
    }
    pub mod kubeflow {
        pub mod pipelines {
            pub mod backend {
                pub mod api {
                    pub mod v2beta1 {
                        include!(concat!(env!("OUT_DIR"), "/kubeflow.pipelines.backend.api.v2beta1.rs"));
                        include!(concat!(env!("OUT_DIR"), "/kubeflow.pipelines.backend.api.v2beta1.serde.rs"));
                    }
                }
            }
        }
    }
}
