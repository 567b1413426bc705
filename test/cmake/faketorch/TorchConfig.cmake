# A stand-in for a CUDA LibTorch's config, for the architecture test: it does
# what torch's cuda.cmake does to a project's CUDA architectures.
set(TORCH_FOUND TRUE)
set(Torch_FOUND TRUE)
set(TORCH_LIBRARIES "")
set(TORCH_CUDA_LIBRARIES "fake-cuda")
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")
set(CMAKE_CUDA_ARCHITECTURES OFF)
string(APPEND CMAKE_CUDA_FLAGS " -gencode arch=compute_75,code=sm_75 -gencode=arch=compute_86,code=sm_86")
