// Fake CUDA header for the host emulator: everything lives in emu_cuda.h.
#pragma once
#include "emu_cuda.h"
