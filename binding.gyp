{
  "targets": [
    {
      "target_name": "yolo_distill",
      "sources": [
        "native/core/loss.cpp",
        "native/core/fused_cpu.cpp",
        "native/core/reference.cpp",
        "native/addon/addon.cpp",
        "native/addon/convert.cpp",
        "native/addon/grad_pool.cpp",
        "native/addon/loss_binding.cpp",
        "native/addon/tensor_wrap.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/core",
        "<!@(node scripts/find-torch.js include)"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "YD_V8_BUFFERS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++14", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O3", "-fno-trapping-math", "-fopenmp", "<!@(node scripts/find-torch.js cflags)"],
      "ldflags": ["-fopenmp", "-Wl,-z,lazy"],
      "libraries": ["<!@(node scripts/find-torch.js libs)"]
    }
  ]
}
